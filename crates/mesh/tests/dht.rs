//! Provider records through real meshes on loopback: what one node provides, a node that is not
//! connected to it finds through the DHT.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, identity::Keypair};
use mycel_mesh::{LocalNode, Mesh, MeshConfig};
use prometheus_client::registry::Registry;

async fn node(name: &str, bootstrap: Option<&Multiaddr>) -> Mesh {
    let mut config = MeshConfig::new(
        Keypair::generate_ed25519(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    );
    config.bootstrap = bootstrap.into_iter().cloned().collect();
    // Only the chain's own links: the far end must be found through the DHT, not dialled.
    config.target_peers = 1;
    let local = LocalNode {
        name: name.into(),
        ..Default::default()
    };
    mycel_mesh::start(config, local, &mut Registry::default())
        .await
        .unwrap()
}

async fn wait_for<F: AsyncFn() -> bool>(what: &str, timeout: Duration, condition: F) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_is_found_through_the_dht() {
    let a = node("a", None).await;
    let b = node("b", Some(&a.listen_addrs[0])).await;
    let c = node("c", Some(&b.listen_addrs[0])).await;
    for mesh in [&a, &b, &c] {
        wait_for("three members", Duration::from_secs(20), async || {
            mesh.handle.nodes().await.unwrap().len() == 3
        })
        .await;
    }

    let key = b"blake3:some-blob".to_vec();
    a.handle.start_providing(key.clone()).await.unwrap();
    let provider = a.handle.peer_id();
    wait_for(
        "c to find a as a provider",
        Duration::from_secs(20),
        async || {
            c.handle
                .find_providers(key.clone())
                .await
                .unwrap()
                .contains(&provider)
        },
    )
    .await;

    // Nobody provides this one: the lookup ends with an empty answer, not a hang.
    let nobody = tokio::time::timeout(
        Duration::from_secs(35),
        c.handle.find_providers(b"nobody".to_vec()),
    )
    .await
    .expect("the lookup ends")
    .unwrap();
    assert!(nobody.is_empty(), "{nobody:?}");

    a.handle.stop_providing(key.clone()).await.unwrap();
    for mesh in [a, b, c] {
        mesh.handle.leave().await.unwrap();
    }
}
