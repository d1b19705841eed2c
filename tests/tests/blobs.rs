//! The blob store through the API and the CLI: what goes in comes out under its BLAKE3 hash, and
//! nothing unverified or unfinished is ever stored.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mycel_protocol::api::{ApiError, BlobStored};
use mycel_tests::{NodeProcess, mycel_cli, within};
use tokio::io::AsyncWriteExt;

fn blake3_id(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

fn sample(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn get(node: &NodeProcess, path: &str) -> Result<reqwest::Response> {
    Ok(reqwest::get(format!("{}{path}", node.api())).await?)
}

async fn error_of(response: reqwest::Response) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    let error: ApiError = response.json().await.context("a JSON error body")?;
    Ok((status, error.code))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_file_reads_back_under_its_hash() -> Result<()> {
    let node = NodeProcess::start("blobs", None).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("module.wasm");
    let bytes = sample(3 * 1024 * 1024 + 17, 7);
    std::fs::write(&file, &bytes)?;

    let out = mycel_cli([
        "push",
        "--node",
        node.api(),
        file.to_str().context("utf-8")?,
    ])
    .await?;
    ensure!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout)?;
    ensure!(printed.trim() == blake3_id(&bytes), "{printed}");

    let response = get(&node, &format!("/v1/blobs/{}", blake3_id(&bytes))).await?;
    ensure!(response.status() == 200, "{response:?}");
    ensure!(
        response.bytes().await?.as_ref() == bytes.as_slice(),
        "bytes differ"
    );

    // The same bytes again are the same blob.
    let out = mycel_cli([
        "push",
        "--json",
        "--node",
        node.api(),
        file.to_str().context("utf-8")?,
    ])
    .await?;
    let stored: BlobStored = serde_json::from_slice(&out.stdout)?;
    ensure!(stored.hash.to_string() == blake3_id(&bytes) && stored.size == bytes.len() as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_hashes_and_unknown_blobs_get_clear_errors() -> Result<()> {
    let node = NodeProcess::start("blob-errors", None).await?;
    let (status, code) = error_of(get(&node, "/v1/blobs/blake3:xyz").await?).await?;
    ensure!(status == 400 && code == "bad_hash", "{status} {code}");

    let unknown = blake3_id(b"nobody has this");
    let (status, code) = within(
        "a lookup of an unknown blob",
        Duration::from_secs(10),
        async { error_of(get(&node, &format!("/v1/blobs/{unknown}")).await?).await },
    )
    .await??;
    ensure!(status == 404 && code == "blob_not_found", "{status} {code}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_whose_declared_hash_does_not_match_stores_nothing() -> Result<()> {
    let node = NodeProcess::start("blob-mismatch", None).await?;
    let bytes = sample(100_000, 1);
    let declared = blake3_id(b"something else");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/blobs?hash={declared}", node.api()))
        .body(bytes.clone())
        .send()
        .await?;
    let (status, code) = error_of(response).await?;
    ensure!(status == 400 && code == "hash_mismatch", "{status} {code}");
    for hash in [declared, blake3_id(&bytes)] {
        let status = get(&node, &format!("/v1/blobs/{hash}")).await?.status();
        ensure!(status == 404, "{hash} answered {status}");
    }
    ensure!(
        std::fs::read_dir(node.data_dir().path().join("blobs/data"))?.count() == 0,
        "a data file was left behind"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_over_the_size_limit_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("mycel.toml");
    std::fs::write(&config, "[blobs]\nmax_size_mb = 1\n")?;
    let node = NodeProcess::builder("blob-limit")
        .arg("--config")
        .arg(config.to_str().context("utf-8")?)
        .start()
        .await?;
    let bytes = sample(1024 * 1024 + 1, 2);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/blobs", node.api()))
        .body(bytes.clone())
        .send()
        .await?;
    let (status, code) = error_of(response).await?;
    ensure!(status == 413 && code == "too_large", "{status} {code}");
    let status = get(&node, &format!("/v1/blobs/{}", blake3_id(&bytes)))
        .await?
        .status();
    ensure!(status == 404, "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_upload_holds_no_partial_blob() -> Result<()> {
    let mut node = NodeProcess::start("blob-crash", None).await?;
    let bytes = sample(8 * 1024 * 1024, 3);
    let hash = blake3_id(&bytes);

    // Send the headers and half the body, then kill the node while it waits for the rest.
    let addr = node.api().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await?;
    let head = format!(
        "POST /v1/blobs?hash={hash} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&bytes[..bytes.len() / 2]).await?;
    stream.flush().await?;
    let tmp = node.data_dir().path().join("blobs/tmp");
    mycel_tests::wait_until(
        "the partial upload to reach the disk",
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            let written: u64 = std::fs::read_dir(&tmp)?
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum();
            Ok(written > 0)
        },
    )
    .await?;
    node.sigkill()?;
    drop(stream);

    node.restart(&[]).await?;
    let status = get(&node, &format!("/v1/blobs/{hash}")).await?.status();
    ensure!(status == 404, "a partial blob answers {status}");
    ensure!(
        std::fs::read_dir(&tmp)?.count() == 0,
        "the partial upload was not cleaned up"
    );
    Ok(())
}

/// The least share of the bytes that nodes other than the origin must serve.
const SHARE: f64 = 0.2;

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_pushed_to_one_node_reaches_five_others_fetching_at_once() -> Result<()> {
    let mesh = mycel_tests::Mesh::star(6).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("big.bin");
        let bytes = sample(96 * 1024 * 1024, 9);
        std::fs::write(&file, &bytes)?;
        let hash = blake3_id(&bytes);
        drop(bytes);
        let out = mycel_cli([
            "push",
            "--node",
            mesh[0].api(),
            file.to_str().context("utf-8")?,
        ])
        .await?;
        ensure!(out.status.success(), "{out:?}");

        let fetches = (1..6).map(|i| mesh[i].blob_id(&hash));
        for (i, id) in futures::future::try_join_all(fetches)
            .await?
            .into_iter()
            .enumerate()
        {
            ensure!(id == hash, "node {} got {id}", i + 1);
        }

        // Fetchers that started together fed each other: the origin did not serve it all.
        let mut sent = Vec::new();
        for node in mesh.iter() {
            let text = node.metrics().await?;
            sent.push(mycel_tests::metrics::value(
                &text,
                "mycel_blob_bytes_sent_total",
                &[],
            ));
        }
        let total: f64 = sent.iter().sum();
        let others: f64 = sent[1..].iter().sum();
        ensure!(
            total >= 5.0 * 96.0 * 1024.0 * 1024.0,
            "only {total} bytes served"
        );
        ensure!(
            others / total >= SHARE,
            "nodes other than the origin served {:.0}% of the bytes: {sent:?}",
            100.0 * others / total
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_with_a_doctored_store_file_is_caught_and_the_fetch_succeeds() -> Result<()> {
    let mesh = mycel_tests::Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let bytes = sample(4 * 1024 * 1024 + 99, 5);
        let hash = blake3_id(&bytes);
        let response = reqwest::Client::new()
            .post(format!("{}/v1/blobs", mesh[0].api()))
            .body(bytes.clone())
            .send()
            .await?;
        ensure!(response.status() == 201, "{response:?}");
        // Node 1 fetches it, so two nodes hold it; then its copy on disk goes bad.
        ensure!(mesh[1].blob_id(&hash).await? == hash);
        let stored = mesh[1]
            .data_dir()
            .path()
            .join("blobs/data")
            .join(hash.trim_start_matches("blake3:"));
        let mut doctored = std::fs::read(&stored)?;
        for i in (0..doctored.len()).step_by(512 * 1024) {
            doctored[i] ^= 0x5a;
        }
        std::fs::write(&stored, doctored)?;

        ensure!(
            mesh[2].blob_id(&hash).await? == hash,
            "node 2 got other bytes"
        );
        ensure!(
            mesh[2].log_tail().contains("dropping a provider"),
            "node 2 never noticed the bad provider"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_cut_off_by_kill_9_resumes_without_refetching_verified_ranges() -> Result<()> {
    let mut mesh = mycel_tests::Mesh::star(2).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let size = 96 * 1024 * 1024;
        let bytes = sample(size, 21);
        let hash = blake3_id(&bytes);
        let response = reqwest::Client::new()
            .post(format!("{}/v1/blobs", mesh[0].api()))
            .body(bytes)
            .send()
            .await?;
        ensure!(response.status() == 201, "{response:?}");

        // Start the download on node 1 and kill node 1 once it has saved some verified ranges.
        let url = format!("{}/v1/blobs/{hash}", mesh[1].api());
        let download = tokio::spawn(async move {
            if let Ok(mut response) = reqwest::get(url).await {
                while let Ok(Some(_)) = response.chunk().await {}
            }
        });
        let saved = mesh[1]
            .data_dir()
            .path()
            .join("blobs/partial")
            .join(format!("{}.have", hash.trim_start_matches("blake3:")));
        // The record is a bitmap of verified ranges: wait for one set bit, not for the file to
        // exist (it is created empty an instant before it is written).
        mycel_tests::wait_until(
            "node 1 to save verified ranges",
            Duration::from_secs(30),
            Duration::from_millis(5),
            async || Ok(std::fs::read(&saved).is_ok_and(|b| b.iter().any(|byte| *byte != 0))),
        )
        .await?;
        mesh[1].sigkill()?;
        download.abort();

        let origin = mesh[0].listen_addr().to_string();
        mesh[1].restart(&[origin]).await?;
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let before = bytes_sent(&mesh[0]).await?;
        ensure!(
            mesh[1].blob_id(&hash).await? == hash,
            "node 1 got other bytes"
        );
        let sent_again = bytes_sent(&mesh[0]).await? - before;
        ensure!(
            mesh[1].log_tail().contains("resuming a fetch"),
            "node 1 did not resume: the kill came too late or the ranges were lost"
        );
        ensure!(
            sent_again < size as f64,
            "the origin sent {sent_again} bytes again: the verified ranges were fetched twice"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

async fn bytes_sent(node: &NodeProcess) -> Result<f64> {
    let text = node.metrics().await?;
    Ok(mycel_tests::metrics::value(
        &text,
        "mycel_blob_bytes_sent_total",
        &[],
    ))
}
