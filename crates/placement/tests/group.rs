//! The placement group over real meshes in one process: snapshots reach late joiners, and a node
//! restarted on its data dir comes back with everything it had committed.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_mesh::{LocalNode, MeshConfig, MeshHandle};
use mycel_placement::{GroupConfig, GroupTiming, PlacementHandle};
use mycel_protocol::{
    Keypair, Resources, Runtime,
    app::Manifest,
    ownership::{AppAction, SignedRequest},
    placement::{WriteError, WriteRequest},
};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A snapshot every 10 entries, so a few dozen writes exercise snapshots and log purges.
fn timing() -> GroupTiming {
    GroupTiming {
        snapshot_every: 10,
        ..Default::default()
    }
}

struct Node {
    mesh: MeshHandle,
    listen: String,
    group: PlacementHandle,
    stop: CancellationToken,
    tasks: TaskTracker,
    _task: tokio::task::JoinHandle<()>,
}

async fn start(key: &Keypair, dir: &Path, bootstrap: Option<&str>) -> Result<Node> {
    let (inbox, requests) = tokio::sync::mpsc::channel(256);
    let mut config = MeshConfig::new(key.clone(), vec!["/ip4/127.0.0.1/tcp/0".parse()?]);
    config.placement_inbox = Some(inbox);
    config.bootstrap = bootstrap
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let local = LocalNode {
        name: "n".into(),
        runtimes: vec![Runtime::Wasm],
        resources: Resources {
            cpu_cores: 4,
            memory_mb: 4096,
            memory_free_mb: 4096,
            disk_free_mb: 4096,
        },
        ..Default::default()
    };
    let mesh = mycel_mesh::start(config, local, &mut Registry::default()).await?;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let config = GroupConfig {
        dir: dir.to_path_buf(),
        mesh: mesh.handle.clone(),
        inbox: requests,
        found: bootstrap.is_none(),
        timing: timing(),
    };
    let group = mycel_placement::start(config, stop.clone(), &tasks).await?;
    Ok(Node {
        listen: mesh.listen_addrs[0].to_string(),
        mesh: mesh.handle,
        group,
        stop,
        tasks,
        _task: mesh.task,
    })
}

impl Node {
    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let _ = self.mesh.leave().await;
    }
}

fn deploy(name: &str) -> WriteRequest {
    let toml = format!(
        "name = \"{name}\"\nversion = \"1\"\n[wasm]\nmodule = \"blake3:{}\"\n[resources]\nmemory_mb = 1\n",
        "c".repeat(64)
    );
    let manifest = Manifest::from_toml(&toml).expect("a valid manifest");
    // Signed by a key of its own: each app has another name, and so its own owner.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64;
    let action = AppAction::deploy(&manifest);
    let signed = SignedRequest::sign(&Keypair::generate_ed25519(), now_ms, action);
    WriteRequest::Deploy {
        manifest: Box::new(manifest),
        by: "test".into(),
        signed: Box::new(signed.expect("signing")),
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn write(group: &PlacementHandle, request: WriteRequest) -> Result<()> {
    // The first write may race the founder's own election.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match group.write(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(WriteError::NoQuorum(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("write"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_joiner_catches_up_from_a_snapshot() -> Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let founder = start(&Keypair::generate_ed25519(), dirs[0].path(), None).await?;
    for i in 0..35 {
        write(&founder.group, deploy(&format!("app{i}"))).await?;
    }
    let snapshot = founder
        .group
        .snapshot_index()
        .context("a snapshot was taken")?;
    ensure!(snapshot >= 20, "snapshot at {snapshot}");

    // The joiner's log starts empty; what it needs has been purged from the leader's log, so
    // only a snapshot can bring it up to date.
    let joiner = start(
        &Keypair::generate_ed25519(),
        dirs[1].path(),
        Some(&founder.listen),
    )
    .await?;
    wait_for(
        "the joiner to hold every app",
        Duration::from_secs(20),
        || joiner.group.replica().state == founder.group.replica().state,
    )
    .await?;
    ensure!(joiner.group.replica().state.apps.len() == 35);
    ensure!(
        joiner.group.cluster().learners == vec![joiner.mesh.peer_id().to_string()],
        "{:?}",
        joiner.group.cluster()
    );
    // And it keeps following: a write through the joiner is forwarded to the founder.
    write(&joiner.group, deploy("after")).await?;
    ensure!(founder.group.replica().state.apps.contains_key("after"));
    joiner.stop().await;
    founder.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_has_what_it_committed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = Keypair::generate_ed25519();
    let node = start(&key, dir.path(), None).await?;
    for i in 0..25 {
        write(&node.group, deploy(&format!("app{i}"))).await?;
    }
    let before = node.group.replica();
    node.stop().await;

    // A snapshot covers the first 20 entries; the rest come back from the log.
    let node = start(&key, dir.path(), None).await?;
    wait_for("the state to be restored", Duration::from_secs(10), || {
        node.group.replica().state == before.state
    })
    .await?;
    write(&node.group, deploy("after")).await?;
    ensure!(node.group.replica().state.apps.len() == 26);
    node.stop().await;
    Ok(())
}

/// The frames a rogue sends: the same wire shape as the group's own requests.
#[derive(serde::Serialize)]
enum RogueRpc {
    Append(openraft::raft::AppendEntriesRequest<mycel_placement::TypeConfig>),
}

/// The one answer a rogue should get.
#[derive(Debug, serde::Deserialize)]
enum RogueReply {
    Refused(String),
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_forged_frames_are_refused_and_change_nothing() -> Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let node = start(&Keypair::generate_ed25519(), dirs[0].path(), None).await?;
    write(&node.group, deploy("before")).await?;
    let term = node.group.cluster().term;

    // The rogue is a real mesh node with no placement group of its own.
    let mut config = MeshConfig::new(
        Keypair::generate_ed25519(),
        vec!["/ip4/127.0.0.1/tcp/0".parse()?],
    );
    config.bootstrap = vec![node.listen.parse()?];
    let rogue = mycel_mesh::start(config, LocalNode::default(), &mut Registry::default()).await?;
    let target = node.mesh.peer_id();

    let ask = async |bytes: Vec<u8>| -> Result<RogueReply> {
        let answer = rogue
            .handle
            .placement_request(target, mycel_mesh::PlacementFrame(bytes))
            .await?;
        Ok(mycel_protocol::decode(&answer.0, 1 << 20)?)
    };
    // Garbage, a frame of a future wire version, and a valid CBOR value of the wrong shape.
    let mut future_version = Vec::new();
    ciborium::into_writer(&(9u16, "hello"), &mut future_version)?;
    for bytes in [
        b"\xff\x00garbage".to_vec(),
        future_version,
        mycel_protocol::encode(&"not an rpc")?,
    ] {
        let RogueReply::Refused(why) = ask(bytes).await?;
        ensure!(why.contains("malformed"), "{why}");
    }
    // A Raft message that claims to come from the leader (a forged sender) with a huge term.
    let forged = openraft::raft::AppendEntriesRequest {
        vote: openraft::Vote::new_committed(u64::MAX / 2, mycel_placement::node_id(&target)),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let RogueReply::Refused(why) = ask(mycel_protocol::encode(&RogueRpc::Append(forged))?).await?;
    ensure!(why.contains("another node"), "{why}");

    // Nothing changed, and the group still commits.
    let cluster = node.group.cluster();
    ensure!(cluster.term == term, "term moved: {cluster:?}");
    ensure!(cluster.leader.as_deref() == Some(node.group.peer_id()));
    write(&node.group, deploy("after")).await?;
    ensure!(node.group.replica().state.apps.len() == 2);
    let _ = rogue.handle.leave().await;
    node.stop().await;
    Ok(())
}
