//! App discovery through the DHT, end to end: an app deployed in a four-node mesh is found by a
//! node that joined later through another peer, and leaves the directory when it stops; a rogue
//! peer's forged and oversized records are never returned; a node alone answers at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, identify,
    identity::Keypair,
    kad::{self, Quorum, Record, RecordKey},
    swarm::{NetworkBehaviour, SwarmEvent},
};
use mycel_protocol::{
    BlobHash, Signed,
    api::DiscoveredApps,
    app::AppKind,
    codec,
    discovery::{AppListing, DiscoverRequest, LISTING_FORMAT, app_key},
    names::{DISCOVER_PROTOCOL, IDENTIFY_PROTOCOL, KADEMLIA_PROTOCOL},
};
use mycel_tests::{
    Mesh, NodeProcess, apps::deploy_hello_as, metrics, mycel_cli, mycel_cli_env, peer::tcp_swarm,
    wait_until,
};

/// Listing lifetime for these tests' nodes, so "gone within the lifetime" runs in seconds.
const TTL_SECS: u64 = 8;
const CONVERGE: Duration = Duration::from_secs(30);

async fn node(name: &str, bootstrap: Option<&NodeProcess>) -> Result<NodeProcess> {
    let mut builder = NodeProcess::builder(name)
        .arg("--discovery-ttl")
        .arg(TTL_SECS.to_string());
    if let Some(peer) = bootstrap {
        builder = builder.join(peer);
    }
    builder.start().await
}

/// `n` nodes, each joining with the first's ticket.
async fn star(n: usize) -> Result<Mesh> {
    let hub = node("n0", None).await?;
    let mut nodes = Vec::new();
    for i in 1..n {
        nodes.push(node(&format!("n{i}"), Some(&hub)).await?);
    }
    nodes.insert(0, hub);
    Ok(Mesh::from_nodes(nodes))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_joiner_finds_an_app_which_leaves_when_stopped() -> Result<()> {
    let mesh = star(4).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let runners = deploy_hello_as(&mesh[0], "hello", 2).await?;

        // A node that joins later, through another peer than the one deployed through.
        let late = node("late", Some(&mesh[3])).await?;
        let joined = std::time::Instant::now();
        let mut found = None;
        wait_until(
            "the late joiner to discover hello",
            Duration::from_secs(20),
            Duration::from_millis(50),
            async || {
                let apps = late.discovered_apps().await?;
                found = apps.apps.into_iter().find(|a| a.name == "hello");
                Ok(found.is_some())
            },
        )
        .await?;
        let took = joined.elapsed();
        eprintln!("figure: a late joiner discovered hello {took:?} after it was ready");
        let app = found.context("found")?;
        ensure!(
            app.version == "1.0.0" && app.kind == AppKind::Wasm,
            "{app:?}"
        );
        ensure!(app.publisher == mesh[0].peer_id(), "{app:?}");
        ensure!(
            !app.providers.is_empty() && app.providers.iter().all(|p| runners.contains(p)),
            "providers {:?}, instances on {runners:?}",
            app.providers
        );

        let by_name = late
            .discovered_app("hello")
            .await?
            .context("hello by name")?;
        ensure!(by_name.version == "1.0.0", "{by_name:?}");
        ensure!(late.discovered_app("nope").await?.is_none());

        let table = mycel_cli(["apps", "browse", "--node", late.api()]).await?;
        ensure!(table.status.success(), "{table:?}");
        let text = String::from_utf8(table.stdout)?;
        ensure!(
            text.starts_with("NAME") && text.contains("hello") && text.contains("1.0.0"),
            "{text}"
        );
        let json = mycel_cli(["apps", "browse", "--json", "--node", late.api()]).await?;
        let parsed: DiscoveredApps = serde_json::from_slice(&json.stdout)?;
        ensure!(parsed.apps.iter().any(|a| a.name == "hello"), "{parsed:?}");

        // Stopped: gone from every node's browse and lookups within the listing lifetime.
        // Deployed unsigned through n0, hello is n0's: the CLI acts as n0 with its key file.
        let n0_key = mesh[0].data_dir().path().join("node.key");
        let n0_key = n0_key.to_str().context("a UTF-8 path")?;
        let out = mycel_cli_env(
            ["stop", "--node", mesh[0].api(), "hello"],
            &[("MYCEL_USER_KEY", n0_key)],
        )
        .await?;
        ensure!(out.status.success(), "mycel stop: {out:?}");
        let stopped = std::time::Instant::now();
        let observers: Vec<&NodeProcess> = mesh.iter().chain([&late]).collect();
        wait_until(
            "hello to disappear from discovery",
            Duration::from_secs(TTL_SECS + 4),
            Duration::from_millis(200),
            async || {
                for node in &observers {
                    let apps = node.discovered_apps().await?;
                    ensure!(apps.apps.is_empty(), "{} still lists {apps:?}", node.name());
                    let hello = node.discovered_app("hello").await?;
                    ensure!(hello.is_none(), "{} still finds {hello:?}", node.name());
                }
                Ok(true)
            },
        )
        .await?;
        eprintln!(
            "hello left discovery {:?} after it was stopped",
            stopped.elapsed()
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_alone_answers_an_empty_list_at_once() -> Result<()> {
    let alone = node("alone", None).await?;
    let started = std::time::Instant::now();
    let apps = alone.discovered_apps().await?;
    ensure!(apps.apps.is_empty(), "{apps:?}");
    ensure!(alone.discovered_app("hello").await?.is_none());
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "alone, a browse and a lookup took {:?}",
        started.elapsed()
    );
    let out = mycel_cli(["apps", "browse", "--node", alone.api()]).await?;
    ensure!(
        out.status.success() && out.stdout == b"no apps found\n",
        "{out:?}"
    );
    Ok(())
}

#[derive(NetworkBehaviour)]
struct RogueBehaviour {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    streams: libp2p_stream::Behaviour,
}

/// A bare libp2p peer that speaks mycel's Kademlia and discover protocol, and lies in both.
struct Rogue {
    swarm: Swarm<RogueBehaviour>,
    key: Keypair,
}

impl Rogue {
    /// A rogue that holds `mesh`'s secret: an insider.
    async fn new(mesh: &Mesh) -> Result<Self> {
        let key = Keypair::generate_ed25519();
        let mut swarm = tcp_swarm(&key, mesh[0].mesh_secret().as_ref(), |key| {
            let local = key.public().to_peer_id();
            let config = kad::Config::new(libp2p::StreamProtocol::new(KADEMLIA_PROTOCOL));
            let mut kad =
                kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), config);
            kad.set_mode(Some(kad::Mode::Server));
            let identify = identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public());
            Ok(RogueBehaviour {
                kad,
                identify: identify::Behaviour::new(identify),
                streams: libp2p_stream::Behaviour::new(),
            })
        })?;
        // Listening, so the nodes add it to their routing tables and ask it in their lookups.
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        Ok(Self { swarm, key })
    }

    /// Drives the swarm while `future` runs.
    async fn drive_while<T>(&mut self, future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                out = &mut future => return out,
                event = self.swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(RogueBehaviourEvent::Kad(
                        kad::Event::OutboundQueryProgressed { result: kad::QueryResult::PutRecord(result), .. },
                    )) = event
                    {
                        eprintln!("rogue put: {result:?}");
                    }
                }
            }
        }
    }

    fn know(&mut self, node: &NodeProcess) -> Result<PeerId> {
        let peer: PeerId = node.peer_id().parse()?;
        let addr: Multiaddr = node.listen_addr().parse()?;
        let addr: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect();
        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        Ok(peer)
    }

    /// Puts `value` under app `name`'s key.
    fn put(&mut self, name: &str, value: Vec<u8>) -> Result<()> {
        let record = Record::new(RecordKey::new(&app_key(name)), value);
        self.swarm
            .behaviour_mut()
            .kad
            .put_record(record, Quorum::One)?;
        Ok(())
    }
}

fn listing(name: &str, description: Option<String>) -> AppListing {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    AppListing {
        format: LISTING_FORMAT,
        name: name.into(),
        version: "6.6.6".into(),
        kind: AppKind::Wasm,
        publisher: Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_string(),
        manifest_hash: BlobHash([6; 32]),
        description,
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + 600_000,
    }
}

/// A listing of `name` that claims `victim` signed it; the forger signed it.
fn forged(name: &str, victim: &str, forger: &Keypair) -> Result<Signed<AppListing>> {
    let payload = codec::encode(&listing(name, None))?;
    let signature = forger.sign(&payload)?;
    let victim: PeerId = victim.parse()?;
    let key = libp2p::identity::PublicKey::try_decode_protobuf(victim.as_ref().digest())?;
    let signer = key.try_into_ed25519()?.to_bytes().to_vec();
    Ok(Signed::from_parts(signer, payload, signature))
}

async fn refused(mesh: &Mesh, reason: &str) -> Result<f64> {
    let mut total = 0.0;
    for node in mesh.iter() {
        total += metrics::value(
            &node.metrics().await?,
            "mycel_dht_records_refused_total",
            &[("reason", reason)],
        );
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_oversized_records_are_never_returned() -> Result<()> {
    let mesh = star(3).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let mut rogue = Rogue::new(&mesh).await?;
        let mut peers = Vec::new();
        for node in mesh.iter() {
            peers.push(rogue.know(node)?);
        }
        // Dial them all, so identify tells them where the rogue listens.
        for peer in &peers {
            rogue.swarm.dial(*peer)?;
        }

        // Into the DHT: a listing forged in a real node's name, and one of the rogue's own,
        // properly signed but far over the size limit.
        let forged_listing = forged("evil", mesh[1].peer_id(), &rogue.key)?;
        rogue.put("evil", codec::encode(&forged_listing)?)?;
        let huge = listing("big", Some("x".repeat(8 * 1024)));
        rogue.put("big", codec::encode(&Signed::sign(&rogue.key, &huge)?)?)?;
        let refusals = wait_until(
            "the nodes to refuse both records",
            Duration::from_secs(15),
            Duration::from_millis(100),
            async || {
                Ok(refused(&mesh, "forged").await? >= 1.0
                    && refused(&mesh, "oversized").await? >= 1.0)
            },
        );
        rogue.drive_while(refusals).await?;

        // Into the directory: the forged listing published straight to every node.
        let mut control = rogue.swarm.behaviour().streams.new_control();
        let publish = DiscoverRequest::Publish {
            listings: vec![forged_listing],
        };
        for peer in &peers {
            let publish = &publish;
            let sent = async {
                let mut stream = control
                    .open_stream(*peer, libp2p::StreamProtocol::new(DISCOVER_PROTOCOL))
                    .await?;
                mycel_mesh_frame::write(&mut stream, publish).await
            };
            rogue.drive_while(sent).await?;
        }

        // Every node's browse and lookups (which reach the rogue's own store) return neither.
        for node in mesh.iter() {
            let check = async {
                let apps = node.discovered_apps().await?;
                ensure!(apps.apps.is_empty(), "{} lists {apps:?}", node.name());
                for name in ["evil", "big"] {
                    let found = node.discovered_app(name).await?;
                    ensure!(found.is_none(), "{} finds {found:?}", node.name());
                }
                Ok(())
            };
            rogue.drive_while(check).await?;
        }
        Ok(())
    }
    .await;
    mesh.report(result)
}

/// The discover protocol's framing, as a peer writes it: one CBOR frame, then the stream closes.
mod mycel_mesh_frame {
    use futures::{AsyncWrite, AsyncWriteExt};
    use serde::Serialize;

    pub(super) async fn write<T: Serialize>(
        stream: &mut (impl AsyncWrite + Unpin),
        message: &T,
    ) -> anyhow::Result<()> {
        let bytes = mycel_protocol::encode(message)?;
        stream.write_all(&bytes).await?;
        stream.close().await?;
        Ok(())
    }
}
