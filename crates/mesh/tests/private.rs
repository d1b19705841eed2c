//! Private meshes through real meshes on loopback: members with the secret find each other; a
//! node with another secret is refused, counted, and listed by nobody; QUIC is refused.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, identity::Keypair};
use mycel_mesh::{JoinTicket, LocalNode, Mesh, MeshConfig, MeshError, MeshSecret};
use prometheus_client::registry::Registry;

fn config(secret: Option<MeshSecret>, bootstrap: Vec<Multiaddr>) -> MeshConfig {
    let mut config = MeshConfig::new(
        Keypair::generate_ed25519(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    );
    config.secret = secret;
    config.bootstrap = bootstrap;
    config
}

async fn node(config: MeshConfig, registry: &mut Registry) -> Mesh {
    let local = LocalNode {
        name: format!(
            "n-{}",
            &config.keypair.public().to_peer_id().to_string()[46..]
        ),
        ..Default::default()
    };
    mycel_mesh::start(config, local, registry).await.unwrap()
}

async fn wait_for<F: AsyncFn() -> bool>(what: &str, timeout: Duration, condition: F) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refused_inbound(registry: &Registry) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with("mycel_handshakes_refused_total{direction=\"inbound\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_holders_of_the_secret_join() {
    let secret = mycel_mesh::transport::generate_secret();
    let mut first_registry = Registry::default();
    let first = node(config(Some(secret.clone()), vec![]), &mut first_registry).await;
    let ticket = first.handle.join_ticket().await.unwrap();
    assert_eq!(ticket.secret.as_ref(), Some(&secret));
    assert_eq!(ticket.peer_id, first.handle.peer_id());
    let ticket: JoinTicket = ticket.to_string().parse().unwrap();

    let member = node(
        config(ticket.secret.clone(), ticket.dial_addrs()),
        &mut Registry::default(),
    )
    .await;
    let outsider = node(
        config(Some(MeshSecret::from_bytes([1; 32])), ticket.dial_addrs()),
        &mut Registry::default(),
    )
    .await;
    let open = node(config(None, ticket.dial_addrs()), &mut Registry::default()).await;
    for mesh in [&first, &member] {
        wait_for("two members", Duration::from_secs(20), async || {
            mesh.handle.nodes().await.unwrap().len() == 2
        })
        .await;
    }
    wait_for(
        "the first node to refuse both outsiders",
        Duration::from_secs(20),
        async || refused_inbound(&first_registry) >= 2,
    )
    .await;
    for mesh in [&first, &member] {
        let listed: Vec<_> = mesh
            .handle
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.peer_id)
            .collect();
        for stranger in [&outsider, &open] {
            assert!(!listed.contains(&stranger.handle.peer_id().to_string()));
        }
    }
    for stranger in [&outsider, &open] {
        assert_eq!(stranger.handle.nodes().await.unwrap().len(), 1);
        assert_eq!(stranger.handle.connected_peers().await.unwrap(), 0);
    }
    for mesh in [first, member, outsider, open] {
        mesh.handle.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_mesh_refuses_to_listen_on_quic() {
    let mut config = config(Some(MeshSecret::from_bytes([2; 32])), vec![]);
    config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    let error = mycel_mesh::start(config, LocalNode::default(), &mut Registry::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, MeshError::QuicInPrivateMesh { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("TCP only"), "{error}");
}
