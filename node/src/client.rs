//! Client commands: HTTP calls to a node's API, printed for a person or as the API's JSON.
//!
//! - this file: talking to the node, `mycel nodes`, `mycel cluster`, `mycel push`;
//! - [`apps`]: `mycel deploy`, `apps`, `status`, `scale`, `stop`;
//! - [`logs`]: `mycel logs`;
//! - [`rollouts`]: `mycel versions`, `rollback`, `promote`, and following a rollout;
//! - [`manifest`]: reading a manifest file and the files it names;
//! - [`table`]: aligned columns;
//! - [`auth`]: the API token every request carries;
//! - [`user_key`]: the user key that signs deploys, scales and stops.

mod apps;
mod auth;
mod logs;
mod manifest;
mod rollouts;
pub(crate) mod secrets;
mod table;
mod user_key;
pub(crate) mod volumes;

use anyhow::{Context, bail};
use std::{
    collections::BTreeMap,
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
    api::{
        ApiError, BlobStored, Cluster, ImagePushed, JoinTicketInfo, MemberStatus, Nodes, RaftRole,
    },
};

pub(crate) use apps::{StopFlags, apps, browse, deploy, scale, status, stop};
pub(crate) use auth::{choose_token, local_node};
pub(crate) use logs::logs;
pub(crate) use rollouts::{promote, rollback, versions};
use table::short_peer;
pub(crate) use user_key::{choose_user_key, whoami};

/// The URL of `segments` under the node's API. Each segment is escaped, so a name given on the
/// command line can never reach another path.
fn api_url(node: &str, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    let bad_node = || format!("--node '{node}' is not an http:// URL");
    let mut url = reqwest::Url::parse(node).with_context(bad_node)?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(bad_node());
    }
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!(bad_node()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Sends `request` to the node and returns the body of a successful answer.
async fn send(node: &str, request: reqwest::RequestBuilder) -> anyhow::Result<String> {
    let response = auth::with_token(request)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    body_of(response).await
}

/// GETs `segments` from the node and returns the body, or the API's error as one sentence.
async fn get(node: &str, segments: &[&str]) -> anyhow::Result<String> {
    let url = api_url(node, segments)?;
    send(node, reqwest::Client::new().get(url)).await
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

/// Prints the API's JSON unchanged, or parses it and prints what `render` makes of it.
fn print_answer<T: serde::de::DeserializeOwned>(
    body: &str,
    json: bool,
    what: &str,
    render: impl FnOnce(T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let value: T =
        serde_json::from_str(body).with_context(|| format!("the node's answer is not {what}"))?;
    print!("{}", render(value));
    Ok(())
}

pub(crate) async fn nodes(node: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "nodes"]).await?;
    print_answer(&body, json, "a node list", |nodes: Nodes| {
        nodes_table(&nodes)
    })
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
    table::render(&rows)
}

/// The names of the nodes the node knows, by peer id; empty when it cannot say (names only make
/// a table easier to read, so a failure here fails nothing).
async fn node_names(node: &str) -> BTreeMap<String, String> {
    let Ok(body) = get(node, &["v1", "nodes"]).await else {
        return BTreeMap::new();
    };
    serde_json::from_str::<Nodes>(&body)
        .map(|nodes| {
            nodes
                .nodes
                .into_iter()
                .map(|n| (n.peer_id, n.name))
                .collect()
        })
        .unwrap_or_default()
}

/// `mycel cluster`: the placement group as the node sees it.
pub(crate) async fn cluster(node: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "cluster"]).await?;
    let names = if json {
        BTreeMap::new()
    } else {
        node_names(node).await
    };
    print_answer(&body, json, "a cluster view", |cluster: Cluster| {
        cluster_table(&cluster, &names)
    })
}

fn cluster_table(cluster: &Cluster, names: &BTreeMap<String, String>) -> String {
    let who = |peer: &str| match names.get(peer) {
        Some(name) => format!("{name} ({})", short_peer(peer)),
        None => peer.to_string(),
    };
    let committed = cluster
        .committed
        .map_or("nothing".to_string(), |c| c.to_string());
    let mut out = match &cluster.leader {
        Some(leader) => format!(
            "leader {}, term {}, committed {committed}\n",
            who(leader),
            cluster.term
        ),
        None => format!(
            "no leader (an election is under way, this node is catching up with the group, or \
             a majority of the voters is out of reach), term {}, committed {committed}\n",
            cluster.term
        ),
    };
    let mut rows = vec![["PEER".to_string(), "NAME".into(), "ROLE".into()]];
    let members = cluster
        .voters
        .iter()
        .map(|p| (p, RaftRole::Voter))
        .chain(cluster.learners.iter().map(|p| (p, RaftRole::Learner)));
    for (peer, role) in members {
        let role = match role {
            _ if cluster.leader.as_ref() == Some(peer) => "voter (leader)",
            RaftRole::Learner => "learner",
            _ => "voter",
        };
        rows.push([
            peer.clone(),
            names.get(peer).cloned().unwrap_or_default(),
            role.to_string(),
        ]);
    }
    out.push_str(&table::render(&rows));
    out
}

/// `mycel join-ticket`: the ticket a new node joins this mesh with, alone on stdout (so
/// `mycel up --join "$(mycel join-ticket)"` works). The node gives it only to a client that
/// holds its API token, found as for every command (a private mesh's ticket holds its secret).
pub(crate) async fn join_ticket(node: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "join-ticket"]).await.map_err(|e| {
        if e.to_string().ends_with("(unauthorized)") {
            e.context(
                "the join ticket needs the node's API token: run this as the node's user with \
                 MYCEL_DATA_DIR set to its data dir, or pass --token",
            )
        } else {
            e
        }
    })?;
    print_answer(&body, json, "a join ticket", |info: JoinTicketInfo| {
        if std::io::stderr().is_terminal() {
            if info.private {
                eprintln!(
                    "a private mesh's ticket: it holds the mesh's secret, give it only to nodes \
                     that may join (mycel up --join TICKET)"
                );
            } else {
                eprintln!("an open mesh's ticket: it holds no secret (mycel up --join TICKET)");
            }
        }
        format!("{}\n", info.ticket)
    })
}

/// `mycel push FILE`: uploads the file, prints its hash. A tar archive (`docker save` or OCI) is
/// pushed as an image: the node splits it into layers and names it in the mesh.
pub(crate) async fn push(node: &str, file: &Path, json: bool) -> anyhow::Result<()> {
    if is_tar(file)? {
        let (pushed, body) = push_image(node, file).await?;
        if json {
            println!("{}", body.trim_end());
        } else {
            eprintln!(
                "pushed image {} ({} layers)",
                pushed.image,
                pushed.layers.len()
            );
            println!("{}", pushed.hash);
        }
        return Ok(());
    }
    let (stored, body) = upload(node, file).await?;
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    println!("{}", stored.hash);
    Ok(())
}

/// Whether `file` is a tar archive (the POSIX magic at offset 257).
pub(crate) fn is_tar(file: &Path) -> anyhow::Result<bool> {
    use std::io::Read;
    let mut header = [0u8; 262];
    let mut reader =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut read = 0;
    while read < header.len() {
        match reader.read(&mut header[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read == header.len() && &header[257..262] == b"ustar")
}

/// Pushes an image archive to `POST /v1/images`; returns the answer and its JSON.
pub(crate) async fn push_image(node: &str, file: &Path) -> anyhow::Result<(ImagePushed, String)> {
    let url = api_url(node, &["v1", "images"])?;
    let body = send_file(node, file, url).await?;
    let pushed: ImagePushed =
        serde_json::from_str(&body).context("the node's answer is not a pushed image")?;
    Ok((pushed, body))
}

/// Hashes `file` here, uploads it declaring that hash (so the node refuses anything that changed
/// on the way) and shows progress on a terminal. Returns the answer and its JSON.
async fn upload(node: &str, file: &Path) -> anyhow::Result<(BlobStored, String)> {
    let path = file.to_path_buf();
    let hash = tokio::task::spawn_blocking(move || -> anyhow::Result<BlobHash> {
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader(file)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(BlobHash(*hasher.finalize().as_bytes()))
    })
    .await??;
    let mut url = api_url(node, &["v1", "blobs"])?;
    url.query_pairs_mut().append_pair("hash", &hash.to_string());
    let body = send_file(node, file, url).await?;
    let stored: BlobStored =
        serde_json::from_str(&body).context("the node's answer is not a blob")?;
    Ok((stored, body))
}

/// POSTs `file` to `url`, streamed, with progress on a terminal; returns the answer's body.
async fn send_file(node: &str, file: &Path, url: reqwest::Url) -> anyhow::Result<String> {
    let reader = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let size = reader.metadata().await?.len();
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
    let counted = {
        let sent = sent.clone();
        tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let request = reqwest::Client::new()
        .post(url)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(counted));
    let response = auth::with_token(request)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"));
    if let Some(progress) = progress {
        progress.abort();
        eprintln!("\rpushed {}: {} MiB{:20}", file.display(), mib(size), "");
    }
    body_of(response?).await
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_names_and_keep_the_node_path() {
        let url = api_url("http://127.0.0.1:7401", &["v1", "apps", "../nodes"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:7401/v1/apps/..%2Fnodes");
        let url = api_url("http://h:1/prefix/", &["v1", "cluster"]).unwrap();
        assert_eq!(url.as_str(), "http://h:1/prefix/v1/cluster");
        assert!(api_url("127.0.0.1:7401", &["v1"]).is_err());
        assert!(api_url("not a url", &["v1"]).is_err());
    }

    #[test]
    fn the_cluster_table_marks_the_leader() {
        let cluster = Cluster {
            leader: Some("12D3KooWAAAAAAAAleader".into()),
            term: 4,
            voters: vec![
                "12D3KooWAAAAAAAAleader".into(),
                "12D3KooWBBBBBBBBvoter".into(),
            ],
            learners: vec!["12D3KooWCCCCCCCClearner".into()],
            committed: Some(17),
            catching_up: false,
        };
        let names = BTreeMap::from([("12D3KooWAAAAAAAAleader".to_string(), "a".to_string())]);
        let text = cluster_table(&cluster, &names);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "leader a (…AAleader), term 4, committed 17");
        assert_eq!(lines[1], "PEER                     NAME  ROLE");
        assert_eq!(lines[2], "12D3KooWAAAAAAAAleader   a     voter (leader)");
        assert_eq!(lines[3], "12D3KooWBBBBBBBBvoter          voter");
        assert_eq!(lines[4], "12D3KooWCCCCCCCClearner        learner");

        let leaderless = Cluster {
            leader: None,
            committed: None,
            catching_up: true,
            ..cluster
        };
        let text = cluster_table(&leaderless, &BTreeMap::new());
        assert!(text.starts_with("no leader ("), "{text}");
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("term 4, committed nothing")
        );
        assert!(!text.contains("(leader)"));
    }
}
