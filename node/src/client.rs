//! Client commands: HTTP calls to a node's API, printed for a person or as the API's JSON.

use anyhow::{Context, bail};
use std::{
    io::IsTerminal,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::StreamExt;
use mycel_protocol::{
    BlobHash,
    api::{ApiError, BlobStored, MemberStatus, Nodes},
};

/// GETs `path` from the node and returns the body, or the API's error as one sentence.
async fn get(node: &str, path: &str) -> anyhow::Result<String> {
    let url = format!("{}{path}", node.trim_end_matches('/'));
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    body_of(response).await
}

/// The body of a successful answer, or the API's error as one sentence.
async fn body_of(response: reqwest::Response) -> anyhow::Result<String> {
    let status = response.status();
    let body = response.text().await.context("reading the node's answer")?;
    if !status.is_success() {
        match serde_json::from_str::<ApiError>(&body) {
            Ok(error) => bail!("{} ({})", error.error, error.code),
            Err(_) => bail!("the node answered {status}"),
        }
    }
    Ok(body)
}

pub(crate) async fn nodes(node: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, "/v1/nodes").await?;
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let nodes: Nodes =
        serde_json::from_str(&body).context("the node's answer is not a node list")?;
    print!("{}", nodes_table(&nodes));
    Ok(())
}

fn nodes_table(nodes: &Nodes) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "PEER".into(),
        "STATUS".into(),
        "RUNTIMES".into(),
        "CPU".into(),
        "MEM FREE/TOTAL".into(),
        "LAST SEEN".into(),
    ]];
    for n in &nodes.nodes {
        let status = match (n.status, n.departed, n.is_self) {
            (_, _, true) => "alive (self)".to_string(),
            (MemberStatus::Dead, true, _) => "dead (left)".to_string(),
            (status, _, _) => status.as_str().to_string(),
        };
        let runtimes: Vec<&str> = n.runtimes.iter().map(|r| r.as_str()).collect();
        rows.push([
            n.name.clone(),
            short_peer(&n.peer_id),
            status,
            runtimes.join(","),
            n.resources.cpu_cores.to_string(),
            format!(
                "{}/{} MiB",
                n.resources.memory_free_mb, n.resources.memory_mb
            ),
            format!("{:.1}s ago", n.last_seen_ms as f64 / 1000.0),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The last characters of a peer id: enough to tell nodes apart in a table.
fn short_peer(peer: &str) -> String {
    let tail = peer.len().saturating_sub(8);
    format!("…{}", &peer[tail..])
}

/// `mycel push FILE`: hashes the file here, uploads it declaring that hash (so the node refuses
/// anything that changed on the way), shows progress on a terminal, prints the hash.
pub(crate) async fn push(node: &str, file: &Path, json: bool) -> anyhow::Result<()> {
    let path = file.to_path_buf();
    let (hash, size) = tokio::task::spawn_blocking(move || -> anyhow::Result<(BlobHash, u64)> {
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata()?.len();
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader(file)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok((BlobHash(*hasher.finalize().as_bytes()), size))
    })
    .await??;

    let sent = Arc::new(AtomicU64::new(0));
    let progress = std::io::stderr().is_terminal().then(|| {
        let sent = sent.clone();
        let name = file.display().to_string();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                let done = sent.load(Ordering::Relaxed);
                eprint!("\rpushing {name}: {} / {} MiB", mib(done), mib(size));
            }
        })
    });

    let reader = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let counted = {
        let sent = sent.clone();
        tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let url = format!("{}/v1/blobs?hash={hash}", node.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(counted))
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"));
    if let Some(progress) = progress {
        progress.abort();
        eprintln!("\rpushed {}: {} MiB{:20}", file.display(), mib(size), "");
    }
    let body = body_of(response?).await?;
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let stored: BlobStored =
        serde_json::from_str(&body).context("the node's answer is not a blob")?;
    println!("{}", stored.hash);
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}
