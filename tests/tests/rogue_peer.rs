//! A peer that speaks libp2p and gossipsub correctly but lies or floods on the membership topic.
//!
//! The rogue is a bare swarm built here (gossipsub with strict signing, identify), not a mycel
//! node: it signs its gossip messages properly, so everything it sends reaches the node's
//! membership logic unless the node's own gossipsub limits stop it first.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify,
    identity::{Keypair, PublicKey},
    swarm::{NetworkBehaviour, SwarmEvent},
};
use mycel_protocol::{
    Advert, Announcement, Resources, Runtime, Signed, codec,
    membership::MAX_ANNOUNCEMENT_BYTES,
    names::{IDENTIFY_PROTOCOL, MEMBERSHIP_TOPIC},
};
use mycel_tests::{Mesh, NodeProcess, mesh::find, metrics, peer::tcp_swarm, wait_until};

const CONVERGE: Duration = Duration::from_secs(30);
const DROPPED: &str = "mycel_adverts_dropped_total";

#[derive(NetworkBehaviour)]
struct RogueBehaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
}

/// A bare libp2p peer, driven only while a test awaits one of its methods.
struct Rogue {
    swarm: Swarm<RogueBehaviour>,
    key: Keypair,
    topic: gossipsub::IdentTopic,
    subscribed: HashSet<PeerId>,
    closed: Vec<PeerId>,
    dial_failures: usize,
}

impl Rogue {
    /// A rogue that holds `mesh`'s secret (an insider: the secret keeps outsiders out, not
    /// members that misbehave).
    fn new(mesh: &Mesh) -> Result<Self> {
        let key = Keypair::generate_ed25519();
        let mut swarm = tcp_swarm(&key, mesh[0].mesh_secret().as_ref(), |key| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .max_transmit_size(1 << 20)
                .build()
                .map_err(|e| e.to_string())?;
            let authenticity = gossipsub::MessageAuthenticity::Signed(key.clone());
            let identify = identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public());
            Ok(RogueBehaviour {
                gossipsub: gossipsub::Behaviour::new(authenticity, config)?,
                identify: identify::Behaviour::new(identify),
            })
        })?;
        let topic = gossipsub::IdentTopic::new(MEMBERSHIP_TOPIC);
        swarm.behaviour_mut().gossipsub.subscribe(&topic)?;
        Ok(Self {
            swarm,
            key,
            topic,
            subscribed: HashSet::new(),
            closed: Vec::new(),
            dial_failures: 0,
        })
    }

    fn peer_id(&self) -> String {
        self.swarm.local_peer_id().to_string()
    }

    fn record(&mut self, event: SwarmEvent<RogueBehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionClosed { peer_id, .. } => {
                self.subscribed.remove(&peer_id);
                self.closed.push(peer_id);
            }
            SwarmEvent::OutgoingConnectionError { .. } => self.dial_failures += 1,
            SwarmEvent::Behaviour(RogueBehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { peer_id, topic, .. },
            )) if topic == self.topic.hash() => {
                self.subscribed.insert(peer_id);
            }
            _ => {}
        }
    }

    /// Drives the swarm until `done` holds (true) or `timeout` passes (false).
    async fn drive_until(&mut self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.record(event),
                Err(_) => return false,
            }
        }
        true
    }

    /// Drives the swarm while `future` runs, so what was published actually goes out.
    async fn drive_while<T>(&mut self, future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                out = &mut future => return out,
                event = self.swarm.select_next_some() => self.record(event),
            }
        }
    }

    /// Dials `node` and waits until it has seen the node subscribe to the membership topic.
    async fn join(&mut self, node: &NodeProcess) -> Result<(PeerId, Multiaddr)> {
        let addr: Multiaddr = node.listen_addr().parse()?;
        let peer: PeerId = node.peer_id().parse()?;
        self.swarm.dial(addr.clone())?;
        let joined = self
            .drive_until(Duration::from_secs(10), |r| r.subscribed.contains(&peer))
            .await;
        ensure!(
            joined,
            "{} never showed the rogue its membership subscription (connected: {})",
            node.name(),
            self.swarm.is_connected(&peer)
        );
        Ok((peer, addr))
    }

    /// Publishes `data` on the membership topic, retrying while no subscribed peer is known.
    async fn publish(&mut self, data: Vec<u8>) -> Result<()> {
        for _ in 0..200 {
            let topic = self.topic.clone();
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic, data.clone())
            {
                Ok(_) => return Ok(()),
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                    self.drive_until(Duration::from_millis(50), |_| false).await;
                }
                Err(e) => bail!("publishing {} bytes: {e}", data.len()),
            }
        }
        bail!("no subscribed peer to publish to within 10 s")
    }
}

fn advert(name: &str) -> Advert {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Advert {
        seq: u64::try_from(now_ms.as_millis()).unwrap_or(u64::MAX),
        name: name.into(),
        addrs: Vec::new(),
        labels: BTreeMap::new(),
        runtimes: vec![Runtime::Wasm],
        resources: Resources {
            cpu_cores: 1,
            memory_mb: 512,
            memory_free_mb: 256,
            disk_free_mb: 1024,
        },
        policy: Default::default(),
    }
}

/// An envelope that claims `claimed` signed an advert, signed instead by `forger`.
fn forged(claimed: &PublicKey, forger: &Keypair, name: &str) -> Result<Vec<u8>> {
    let payload = codec::encode(&Announcement::Advert(advert(name)))?;
    let signature = forger.sign(&payload)?;
    let signer = claimed.clone().try_into_ed25519()?.to_bytes().to_vec();
    let envelope = Signed::<Announcement>::from_parts(signer, payload, signature);
    Ok(codec::encode(&envelope)?)
}

async fn dropped(node: &NodeProcess, reason: &str) -> Result<f64> {
    Ok(metrics::value(
        &node.metrics().await?,
        DROPPED,
        &[("reason", reason)],
    ))
}

/// Every node is healthy, lists none of `strangers`, and still sees every real node alive.
async fn still_working(mesh: &Mesh, strangers: &[&str]) -> Result<()> {
    for node in mesh.iter() {
        let health = node.health().await?;
        ensure!(health.status == "ok", "{}: {health:?}", node.name());
        let view = node.nodes().await?;
        for stranger in strangers {
            ensure!(
                find(&view, stranger).is_none(),
                "{} lists {stranger}",
                node.name()
            );
        }
    }
    mesh.wait_converged(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_adverts_are_dropped_and_the_forger_cut_off() -> Result<()> {
    let mesh = Mesh::chain(2).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let target = &mesh[0];
        let before = dropped(target, "forged").await?;

        // A stranger's key on an advert signed by the rogue.
        let mut rogue = Rogue::new(&mesh)?;
        let (node_peer, node_addr) = rogue.join(target).await?;
        let victim = Keypair::generate_ed25519().public();
        let victim_id = victim.to_peer_id().to_string();
        rogue
            .publish(forged(&victim, &rogue.key, "victim")?)
            .await?;
        let rose = wait_until(
            "the forged counter to rise",
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || Ok(dropped(target, "forged").await? > before),
        );
        rogue.drive_while(rose).await?;
        still_working(&mesh, &[&rogue.peer_id(), &victim_id]).await?;

        // The node cuts the forger off, and does not take it back at once.
        let cut = rogue
            .drive_until(Duration::from_secs(5), |r| {
                r.closed.contains(&node_peer) && !r.swarm.is_connected(&node_peer)
            })
            .await;
        ensure!(
            cut,
            "the node kept the forger connected 5 s after a forged advert"
        );
        let (closed, failures) = (rogue.closed.len(), rogue.dial_failures);
        rogue.swarm.dial(node_addr)?;
        let refused = rogue
            .drive_until(Duration::from_secs(5), |r| {
                r.dial_failures > failures || r.closed.len() > closed
            })
            .await;
        ensure!(
            refused,
            "the node accepted the forger again and kept it for 5 s"
        );

        // Another rogue impersonates a real node: that node's entry must not change.
        let real = &mesh[1];
        let real_key =
            PublicKey::try_decode_protobuf(real.peer_id().parse::<PeerId>()?.as_ref().digest())
                .context("a real node's peer id holds its public key")?;
        let before = dropped(target, "forged").await?;
        let mut impostor = Rogue::new(&mesh)?;
        impostor.join(target).await?;
        impostor
            .publish(forged(&real_key, &impostor.key, "impostor")?)
            .await?;
        let rose = wait_until(
            "the forged counter to rise again",
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || Ok(dropped(target, "forged").await? > before),
        );
        impostor.drive_while(rose).await?;
        let view = target.nodes().await?;
        let entry = find(&view, real.peer_id()).context("the real node is listed")?;
        ensure!(entry.name == real.name(), "impersonated entry: {entry:?}");
        still_working(&mesh, &[&rogue.peer_id(), &impostor.peer_id(), &victim_id]).await
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_frames_are_dropped() -> Result<()> {
    let mesh = Mesh::chain(2).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let target = &mesh[0];
        let before = target.metrics().await?;

        // 200 KiB: above the node's gossipsub limit (64 KiB), so membership never sees it.
        let mut flooder = Rogue::new(&mesh)?;
        flooder.join(target).await?;
        flooder.publish(vec![0xab; 200 * 1024]).await?;
        flooder.drive_until(Duration::from_secs(1), |_| false).await;

        // A well-formed advert, properly signed by its sender, padded past the announcement limit.
        let mut padder = Rogue::new(&mesh)?;
        padder.join(target).await?;
        let mut padded = advert("padded");
        padded.labels = (0..32)
            .map(|i| (format!("k{i:02}-{}", "x".repeat(55)), "v".repeat(250)))
            .collect();
        padded.addrs = (0..6)
            .map(|i| format!("/dns4/{i}{}.example/tcp/7400", "a".repeat(200)))
            .collect();
        padded.validate()?;
        let announcement = Announcement::Advert(padded);
        let frame = codec::encode(&Signed::sign(&padder.key, &announcement)?)?;
        ensure!(
            (MAX_ANNOUNCEMENT_BYTES + 1024..16 * 1024).contains(&frame.len()),
            "padded frame is {} bytes",
            frame.len()
        );
        padder.publish(frame).await?;
        let oversized_before = metrics::value(&before, DROPPED, &[("reason", "oversized")]);
        let rose = wait_until(
            "the oversized counter to rise",
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || Ok(dropped(target, "oversized").await? > oversized_before),
        );
        padder.drive_while(rose).await?;

        let after = target.metrics().await?;
        let delta = |reason| {
            metrics::value(&after, DROPPED, &[("reason", reason)])
                - metrics::value(&before, DROPPED, &[("reason", reason)])
        };
        ensure!(
            delta("oversized") == 1.0 && delta("malformed") == 0.0,
            "the 200 KiB frame reached membership: oversized +{}, malformed +{}",
            delta("oversized"),
            delta("malformed")
        );
        still_working(&mesh, &[&flooder.peer_id(), &padder.peer_id()]).await
    }
    .await;
    mesh.report(result)
}
