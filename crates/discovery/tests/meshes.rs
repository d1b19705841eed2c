//! Discovery over real meshes on loopback, in process: announce on one node, find from another
//! that only joined later through a different peer, withdraw, and browse alone.

use std::time::{Duration, Instant};

use mycel_discovery::{DiscoveryConfig, DiscoveryHandle, LocalApp};
use mycel_mesh::{LocalNode, Mesh, MeshConfig};
use mycel_protocol::{BlobHash, Keypair, app::AppKind};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

struct Node {
    mesh: Mesh,
    discovery: DiscoveryHandle,
    apps: watch::Sender<Vec<LocalApp>>,
}

async fn node(name: &str, bootstrap: Option<&Node>) -> Node {
    let keypair = Keypair::generate_ed25519();
    let mut config = MeshConfig::new(
        keypair.clone(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    );
    config.bootstrap = bootstrap
        .map(|b| b.mesh.listen_addrs[0].clone())
        .into_iter()
        .collect();
    let local = LocalNode {
        name: name.into(),
        ..Default::default()
    };
    let mesh = mycel_mesh::start(config, local, &mut Registry::default())
        .await
        .unwrap();
    let (apps, feed) = watch::channel(Vec::new());
    let mut config = DiscoveryConfig::new(mesh.handle.clone(), keypair);
    config.lifetime = Duration::from_secs(30);
    let tasks = TaskTracker::new();
    let discovery = mycel_discovery::start(config, feed, CancellationToken::new(), &tasks);
    Node {
        mesh,
        discovery,
        apps,
    }
}

fn hello(version: &str) -> LocalApp {
    LocalApp {
        name: "hello".into(),
        version: version.into(),
        kind: AppKind::Wasm,
        publisher: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        manifest_hash: BlobHash([3; 32]),
        description: None,
    }
}

async fn wait_for<F: AsyncFn() -> bool>(what: &str, timeout: Duration, condition: F) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_joiner_finds_an_app_and_sees_it_go() {
    let a = node("a", None).await;
    let b = node("b", Some(&a)).await;
    let c = node("c", Some(&a)).await;
    for n in [&a, &b, &c] {
        wait_for("three members", Duration::from_secs(20), async || {
            n.mesh.handle.nodes().await.unwrap().len() == 3
        })
        .await;
    }
    b.apps.send_replace(vec![hello("1.0.0")]);
    let provider = b.mesh.handle.peer_id().to_string();

    let late = node("late", Some(&c)).await;
    let joined = Instant::now();
    wait_for(
        "the late joiner to find hello",
        Duration::from_secs(20),
        async || {
            late.discovery.browse().await.iter().any(|app| {
                app.name == "hello" && app.version == "1.0.0" && app.providers == [provider.clone()]
            })
        },
    )
    .await;
    eprintln!(
        "late joiner found hello {:?} after joining",
        joined.elapsed()
    );
    let found = late.discovery.lookup("hello").await.expect("found by name");
    assert_eq!(found.version, "1.0.0");
    assert!(found.providers.contains(&provider), "{found:?}");
    assert!(late.discovery.lookup("nope").await.is_none());

    // Stopped: withdrawn from the directory at once.
    b.apps.send_replace(Vec::new());
    wait_for(
        "hello to leave the directory",
        Duration::from_secs(10),
        async || late.discovery.browse().await.is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_alone_answers_at_once() {
    let alone = node("alone", None).await;
    let started = Instant::now();
    assert!(alone.discovery.browse().await.is_empty());
    assert!(alone.discovery.lookup("hello").await.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    alone.apps.send_replace(vec![hello("2.0.0")]);
    wait_for("its own app", Duration::from_secs(10), async || {
        alone.discovery.browse().await.len() == 1
    })
    .await;
    let own = alone.discovery.lookup("hello").await.expect("its own app");
    assert_eq!(own.providers, [alone.mesh.handle.peer_id().to_string()]);
}
