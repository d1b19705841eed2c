//! Containers end to end, against the real Docker engine: an image archive pushed to one node
//! runs as an app deployed through another and answers through a third node's gateway, locked
//! down; a second image that shares base layers moves only its new layers; hostile archives are
//! refused and change nothing; graceful stops and `kill -9` leave no container behind.
//!
//! Every node of a test shares the machine's one engine, as nodes on one host would.

use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use mycel_tests::{
    Mesh, NodeProcess,
    apps::container_manifest,
    docker::{containers_of, docker, layered_image, remove_containers_of},
    hello_container_example, metrics, mycel_cli, wait_until,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn push_image(node: &NodeProcess, archive: &Path) -> Result<Value> {
    let (status, answer) = node.push_image(archive).await?;
    ensure!(status == StatusCode::CREATED, "push: {status} {answer}");
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_pushed_to_one_node_runs_through_another_and_answers_through_a_third() -> Result<()>
{
    let (archive, _) = hello_container_example()?;
    let mut mesh = Mesh::star(3).await?;
    let result = async {
        // Pushed with the CLI through n0: it prints the image's hash.
        let out = mycel_cli([
            "push",
            "--node",
            mesh[0].api(),
            archive.to_str().context("a UTF-8 path")?,
        ])
        .await?;
        ensure!(out.status.success(), "mycel push: {out:?}");
        let hash = String::from_utf8(out.stdout)?.trim().to_owned();
        ensure!(hash.starts_with("blake3:"), "{hash}");
        wait_until(
            "every node to know the image",
            Duration::from_secs(20),
            Duration::from_millis(100),
            async || {
                for node in mesh.iter() {
                    let images = node.images().await?;
                    ensure!(
                        images.images.iter().any(|i| {
                            i.image == "mycel-hello-container:1.0" && i.hash.to_string() == hash
                        }),
                        "{}: {images:?}",
                        node.name()
                    );
                }
                Ok(true)
            },
        )
        .await?;

        // Deployed through n1, reached through n2.
        let (status, answer) = mesh[1].deploy(&container_manifest("hc", &hash, 2)).await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
        mesh[1].wait_running("hc", 2).await?;
        let mut served_by = BTreeSet::new();
        for _ in 0..10 {
            let response = mesh[2].through_gateway("hc", "/").await?;
            ensure!(response.status() == StatusCode::OK, "{response:?}");
            let node = response
                .headers()
                .get("x-mycel-node")
                .context("x-mycel-node")?
                .to_str()?
                .to_owned();
            served_by.insert(node);
            let body = response.text().await?;
            ensure!(body == "hello from a mycel container: ahoy\n", "{body:?}");
        }
        ensure!(served_by.len() == 2, "served by {served_by:?}");

        // Locked down from the inside: not root, a read-only root, the manifest's memory.
        let whoami = mesh[2]
            .through_gateway("hc", "/whoami")
            .await?
            .text()
            .await?;
        for expected in ["uid=65534", "readonly_root=true", "memory_limit=33554432"] {
            ensure!(whoami.contains(expected), "{expected} in {whoami:?}");
        }

        // Request lines reach `mycel logs` (once the engine's log stream delivered them).
        wait_until(
            "GET /whoami in mycel logs",
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || {
                let out = mycel_cli(["logs", "--node", mesh[0].api(), "hc"]).await?;
                ensure!(out.status.success(), "mycel logs: {out:?}");
                Ok(String::from_utf8_lossy(&out.stdout).contains("GET /whoami"))
            },
        )
        .await?;

        // Every node leaves gracefully: no container of mycel is left.
        let peers: Vec<String> = mesh.iter().map(|n| n.peer_id().to_owned()).collect();
        for i in 0..3 {
            mesh[i].sigterm()?;
        }
        for i in 0..3 {
            mesh[i].wait_exit(Duration::from_secs(30)).await?;
        }
        for peer in &peers {
            let left = containers_of(peer)?;
            ensure!(left.is_empty(), "{peer} left containers {left:?}");
        }
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_image_moves_only_its_new_layers() -> Result<()> {
    let (base_archive, _) = hello_container_example()?;
    let dir = tempfile::tempdir()?;
    let tag = format!("mycel-test-layered-{}:1", std::process::id());
    let layered_archive = layered_image(dir.path(), &tag, 2 << 20)?;

    let mesh = Mesh::hub_and_runner().await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(20)).await?;
        let base = push_image(&mesh[0], &base_archive).await?;
        let layered = push_image(&mesh[0], &layered_archive).await?;
        let base_layers = base["layers"].as_array().context("layers")?;
        let layered_layers = layered["layers"].as_array().context("layers")?;
        ensure!(
            layered_layers.len() == base_layers.len() + 1,
            "{layered_layers:?}"
        );
        for (a, b) in base_layers.iter().zip(layered_layers) {
            ensure!(a["hash"] == b["hash"], "shared layers are the same blobs");
        }
        let new_layer = layered_layers.last().context("the new layer")?["size"]
            .as_u64()
            .context("size")?;
        let shared: u64 = base_layers.iter().filter_map(|l| l["size"].as_u64()).sum();

        let received = |text: &str| metrics::value(text, "mycel_blob_bytes_received_total", &[]);
        let before = received(&mesh[1].metrics().await?);
        let mut manifest =
            container_manifest("layered", layered["hash"].as_str().context("hash")?, 1);
        manifest["placement"] =
            json!({ "required": [{ "key": "role", "op": "in", "values": ["runner"] }] });
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
        mesh[0].wait_running("layered", 1).await?;
        let response = mesh[0].through_gateway("layered", "/").await?;
        ensure!(response.status() == StatusCode::OK, "{response:?}");

        // The runner's engine holds the base image: only the new layer (and the config and
        // record, a few KiB) crossed the mesh.
        let moved = received(&mesh[1].metrics().await?) - before;
        ensure!(
            moved >= new_layer as f64 && moved < (new_layer + 64 * 1024) as f64,
            "moved {moved} bytes for a new layer of {new_layer} (shared layers: {shared} bytes)"
        );
        Ok(())
    }
    .await;
    remove_containers_of(&mesh);
    let _ = docker(&["rmi", "-f", &tag]);
    mesh.report(result)
}

/// A tar archive of `entries` (path, bytes), written without the tar crate's path checks.
fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, bytes) in entries {
        let mut header = [0u8; 512];
        header[..path.len()].copy_from_slice(path.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", bytes.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| *b as u32).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(bytes);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_archives_are_refused_and_change_nothing() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let node = NodeProcess::start("n0", None).await?;
    let mesh = Mesh::from_nodes(vec![node]);
    let result = async {
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["evil:1"],"Layers":["../../etc/passwd"]}]"#;
        let traversal = raw_tar(&[("manifest.json", manifest), ("../evil", b"x")]);

        // The real archive with one byte of its largest file flipped: a digest that lies.
        let mut corrupted = std::fs::read(&archive)?;
        let at = corrupted.len() / 2;
        corrupted[at] ^= 0xff;

        for (what, bytes) in [
            ("path traversal", traversal),
            ("a digest that does not match", corrupted),
            ("not an archive", b"hello".to_vec()),
        ] {
            let (status, answer) = mesh[0].push_image_bytes(bytes).await?;
            ensure!(
                status == StatusCode::BAD_REQUEST,
                "{what}: {status} {answer}"
            );
            ensure!(
                answer["error"].as_str().is_some_and(|e| !e.is_empty())
                    && answer["code"].as_str().is_some(),
                "{what}: {answer}"
            );
        }
        let images = mesh[0].images().await?;
        ensure!(images.images.is_empty(), "nothing recorded: {images:?}");
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_and_restarted_removes_the_containers_it_left() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let node = NodeProcess::start("n0", None).await?;
    let mut mesh = Mesh::from_nodes(vec![node]);
    let result = async {
        let pushed = push_image(&mesh[0], &archive).await?;
        let hash = pushed["hash"].as_str().context("hash")?.to_owned();
        let (status, answer) = mesh[0]
            .deploy(&container_manifest("orphans", &hash, 1))
            .await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
        mesh[0].wait_running("orphans", 1).await?;
        let peer = mesh[0].peer_id().to_owned();
        let before = containers_of(&peer)?;
        ensure!(before.len() == 1, "{before:?}");

        mesh[0].sigkill()?;
        ensure!(
            containers_of(&peer)? == before,
            "kill -9 leaves the container"
        );
        mesh[0].restart_in_place().await?;
        // The replica says "running" from before the kill until the agent reports again: wait
        // for the answer itself.
        wait_until(
            "the restarted node to serve orphans again",
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || {
                let response = mesh[0].through_gateway("orphans", "/").await?;
                ensure!(response.status() == StatusCode::OK, "{response:?}");
                Ok(true)
            },
        )
        .await?;
        let after = containers_of(&peer)?;
        ensure!(
            after.len() == 1 && after.is_disjoint(&before),
            "the orphan is gone and one new container runs: before {before:?}, after {after:?}"
        );
        Ok(())
    }
    .await;
    let result = match result {
        Ok(()) => Ok(()),
        Err(e) => {
            mesh.print_logs();
            bail!(e)
        }
    };
    // Leave nothing behind either way.
    remove_containers_of(&mesh);
    result
}
