//! Client commands: HTTP calls to a node's API, printed for a person or as the API's JSON.

use anyhow::{Context, bail};
use mycel_protocol::api::{ApiError, MemberStatus, Nodes};

/// GETs `path` from the node and returns the body, or the API's error as one sentence.
async fn get(node: &str, path: &str) -> anyhow::Result<String> {
    let url = format!("{}{path}", node.trim_end_matches('/'));
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
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
