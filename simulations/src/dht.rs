//! `dht_sim`: app discovery's DHT lookups in a simulated mesh of 1,000 nodes.
//!
//! Every node is a real libp2p swarm running mycel's own Kademlia (`mycel_mesh::records`: the
//! same configuration, and every inbound record checked by the same code) over libp2p's
//! in-memory transport with Noise and Yamux, all in this process on a 2-thread runtime. Each
//! node is given every other node's address at the start, so its routing table fills the way a
//! converged one does (20 peers of each distance range, in random order), and bootstraps once,
//! as a joining node does. Then, for each lookup, a random node signs a real app listing, puts it under the app's
//! key and provides the key, and another random node finds the record (checked as discovery
//! checks it) and the providers. A forged listing is put now and then: no node may store it.
//!
//! Hops are counted on the routing tables the swarms built: a lookup in rounds of 3 parallel
//! requests (Kademlia's alpha) on those very tables, until the node closest to the key is
//! reached. The same model on synthetic full tables extends the figure to 10,000 nodes.
//!
//! ```sh
//! cargo run --release -p mycel-simulations --bin dht_sim -- 1 1000   # seed, nodes
//! ```

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, Transport,
    core::{transport::MemoryTransport, upgrade::Version},
    identity::Keypair,
    kad::{
        self, AddProviderOk, GetProvidersOk, GetRecordOk, KBucketDistance, KBucketKey, QueryResult,
        Quorum, Record, RecordKey,
    },
    noise,
    swarm::SwarmEvent,
    yamux,
};
use mycel_mesh::records::{self, Store};
use mycel_protocol::{
    BlobHash, Signed,
    app::AppKind,
    discovery::{AppListing, LISTING_FORMAT, app_key, verify_dht_record},
};
use rand::{RngExt, SeedableRng, rngs::StdRng, seq::SliceRandom};
use tokio::sync::{mpsc, oneshot};

/// Kademlia's bucket size and replication factor.
const K: usize = 20;
/// Kademlia's parallelism.
const ALPHA: usize = 3;
const LOOKUPS: usize = 200;
/// Every this many lookups, a forged listing is put too.
const FORGE_EVERY: usize = 10;
/// How long an unused connection stays open: short, so a thousand in-process nodes do not hold
/// tens of thousands of idle connections (a node keeps 60 s).
const IDLE_CONNECTION: Duration = Duration::from_secs(10);

enum Command {
    Put(Record, oneshot::Sender<bool>),
    Provide(RecordKey, oneshot::Sender<bool>),
    Get(RecordKey, oneshot::Sender<Found>),
    Providers(RecordKey, oneshot::Sender<Found>),
    Table(oneshot::Sender<Vec<PeerId>>),
    Stored(RecordKey, oneshot::Sender<bool>),
    /// How many Kademlia queries this node has running.
    Queries(oneshot::Sender<usize>),
}

/// What one lookup found, and what it cost.
#[derive(Default)]
struct Found {
    /// When the first valid record (or provider) arrived.
    first: Option<Duration>,
    total: Duration,
    requests: u32,
    valid: usize,
    refused: usize,
}

struct Pending {
    started: Instant,
    found: Found,
    reply: oneshot::Sender<Found>,
}

/// One node's event loop: commands in, Kademlia events handled as the mesh actor does.
async fn run_node(mut swarm: Swarm<kad::Behaviour<Store>>, mut commands: mpsc::Receiver<Command>) {
    let mut writes: HashMap<kad::QueryId, oneshot::Sender<bool>> = HashMap::new();
    let mut reads: HashMap<kad::QueryId, (RecordKey, Pending)> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                let kad = swarm.behaviour_mut();
                match command {
                    Command::Put(record, reply) => match kad.put_record(record, Quorum::One) {
                        Ok(id) => { writes.insert(id, reply); }
                        Err(_) => { let _ = reply.send(false); }
                    },
                    Command::Provide(key, reply) => match kad.start_providing(key) {
                        Ok(id) => { writes.insert(id, reply); }
                        Err(_) => { let _ = reply.send(false); }
                    },
                    Command::Get(key, reply) => {
                        let id = kad.get_record(key.clone());
                        reads.insert(id, (key, Pending { started: Instant::now(), found: Found::default(), reply }));
                    }
                    Command::Providers(key, reply) => {
                        let id = kad.get_providers(key.clone());
                        reads.insert(id, (key, Pending { started: Instant::now(), found: Found::default(), reply }));
                    }
                    Command::Table(reply) => {
                        let peers = kad
                            .kbuckets()
                            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
                            .collect();
                        let _ = reply.send(peers);
                    }
                    Command::Queries(reply) => {
                        let _ = reply.send(kad.iter_queries().count());
                    }
                    Command::Stored(key, reply) => {
                        use kad::store::RecordStore;
                        let _ = reply.send(kad.store_mut().get(&key).is_some());
                    }
                }
            }
            event = swarm.select_next_some() => {
                let SwarmEvent::Behaviour(event) = event else { continue };
                match event {
                    kad::Event::InboundRequest { request } => {
                        let _ = records::admit(swarm.behaviour_mut(), request, Duration::from_secs(300));
                    }
                    kad::Event::OutboundQueryProgressed { id, result, step, stats } => {
                        on_progress(id, result, step.last, &stats, &mut writes, &mut reads);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn on_progress(
    id: kad::QueryId,
    result: QueryResult,
    last: bool,
    stats: &kad::QueryStats,
    writes: &mut HashMap<kad::QueryId, oneshot::Sender<bool>>,
    reads: &mut HashMap<kad::QueryId, (RecordKey, Pending)>,
) {
    match result {
        QueryResult::PutRecord(result) => {
            if let Some(reply) = writes.remove(&id) {
                let _ = reply.send(result.is_ok());
            }
        }
        QueryResult::StartProviding(result) => {
            if let Some(reply) = writes.remove(&id) {
                let _ = reply.send(matches!(result, Ok(AddProviderOk { .. })));
            }
        }
        QueryResult::GetRecord(result) => {
            let Some((key, pending)) = reads.get_mut(&id) else {
                return;
            };
            if let Ok(GetRecordOk::FoundRecord(found)) = result {
                let now_ms = records::now_ms();
                match verify_dht_record(key.as_ref(), &found.record.value, now_ms) {
                    Ok(_) => {
                        pending.found.valid += 1;
                        pending.found.first.get_or_insert(pending.started.elapsed());
                    }
                    Err(_) => pending.found.refused += 1,
                }
            }
            finish(id, last, stats, reads);
        }
        QueryResult::GetProviders(result) => {
            let Some((_, pending)) = reads.get_mut(&id) else {
                return;
            };
            if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                pending.found.valid += providers.len();
                pending.found.first.get_or_insert(pending.started.elapsed());
            }
            finish(id, last, stats, reads);
        }
        _ => {}
    }
}

fn finish(
    id: kad::QueryId,
    last: bool,
    stats: &kad::QueryStats,
    reads: &mut HashMap<kad::QueryId, (RecordKey, Pending)>,
) {
    if !last {
        return;
    }
    if let Some((_, mut pending)) = reads.remove(&id) {
        pending.found.total = pending.started.elapsed();
        pending.found.requests = stats.num_requests();
        let _ = pending.reply.send(pending.found);
    }
}

fn build_swarm(key: &Keypair) -> Result<Swarm<kad::Behaviour<Store>>> {
    let noise = noise::Config::new(key)?;
    Ok(SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_other_transport(|_| {
            MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
        })?
        .with_behaviour(|key| {
            // Each node bootstraps once, when its table is filled (as a node does when it
            // joins); the periodic re-bootstrap would only add noise to the measured lookups.
            let mut config = records::kademlia_config();
            config.set_periodic_bootstrap_interval(None);
            records::kademlia(key.public().to_peer_id(), config)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION))
        .build())
}

struct Node {
    key: Keypair,
    peer: PeerId,
    commands: mpsc::Sender<Command>,
}

impl Node {
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .context("a node stopped")?;
        Ok(rx.await?)
    }
}

fn listing(name: &str) -> AppListing {
    let now = records::now_ms();
    AppListing {
        format: LISTING_FORMAT,
        name: name.into(),
        version: "1.0.0".into(),
        kind: AppKind::Wasm,
        publisher: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        manifest_hash: BlobHash([9; 32]),
        description: None,
        issued_at_ms: now,
        expires_at_ms: now + 600_000,
    }
}

/// A lookup of `target` from `origin` in rounds of `ALPHA` requests over `tables` (each node's
/// routing table): the round in which the node closest to the target is first asked, and how
/// many rounds until the K closest known are all asked.
fn rounds(
    tables: &HashMap<PeerId, Vec<PeerId>>,
    origin: PeerId,
    target: &KBucketKey<Vec<u8>>,
) -> (usize, usize) {
    let distance = |p: &PeerId| KBucketKey::from(*p).distance(target);
    let closest = tables
        .keys()
        .filter(|p| **p != origin)
        .min_by_key(|p| distance(p))
        .copied();
    let closest_k = |peers: &[PeerId]| -> Vec<(KBucketDistance, PeerId)> {
        let mut by: Vec<(KBucketDistance, PeerId)> =
            peers.iter().map(|p| (distance(p), *p)).collect();
        by.sort();
        by.truncate(K);
        by
    };
    let mut candidates: BTreeMap<KBucketDistance, PeerId> =
        closest_k(&tables[&origin]).into_iter().collect();
    let mut asked: HashSet<PeerId> = HashSet::new();
    let (mut round, mut reached, mut stalled) = (0, None, false);
    loop {
        // As libp2p does: ALPHA at a time while answers bring closer peers; once a round brings
        // none, all of the K closest not yet asked at once.
        let batch: Vec<PeerId> = candidates
            .values()
            .take(K)
            .filter(|p| !asked.contains(*p))
            .take(if stalled { K } else { ALPHA })
            .copied()
            .collect();
        if batch.is_empty() {
            return (reached.unwrap_or(round + 1), round);
        }
        round += 1;
        let best = candidates.keys().next().copied();
        for peer in batch {
            asked.insert(peer);
            if Some(peer) == closest && reached.is_none() {
                reached = Some(round);
            }
            if let Some(table) = tables.get(&peer) {
                candidates.extend(closest_k(table).into_iter().filter(|(_, p)| *p != origin));
            }
        }
        stalled = candidates.keys().next().copied() == best;
    }
}

/// Which of `peers` node `i`'s routing table holds when it has heard of all of them, in random
/// order: the first `K` of each distance range (a k-bucket keeps its first `K`).
fn full_table(keys: &[KBucketKey<PeerId>], i: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).filter(|j| *j != i).collect();
    order.shuffle(rng);
    let mut buckets: HashMap<u32, usize> = HashMap::new();
    order
        .into_iter()
        .filter(|&j| {
            let Some(bucket) = keys[i].distance(&keys[j]).ilog2() else {
                return false;
            };
            let filled = buckets.entry(bucket).or_default();
            *filled += 1;
            *filled <= K
        })
        .collect()
}

/// Full routing tables of `n` random peers.
fn synthetic_tables(n: usize, rng: &mut StdRng) -> HashMap<PeerId, Vec<PeerId>> {
    let peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
    let keys: Vec<KBucketKey<PeerId>> = peers.iter().map(|p| KBucketKey::from(*p)).collect();
    (0..n)
        .map(|i| {
            let table = full_table(&keys, i, rng)
                .into_iter()
                .map(|j| peers[j])
                .collect();
            (peers[i], table)
        })
        .collect()
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn hop_figures(tables: &HashMap<PeerId, Vec<PeerId>>, lookups: usize, rng: &mut StdRng) -> String {
    let peers: Vec<PeerId> = tables.keys().copied().collect();
    let (mut reach, mut total) = (Vec::new(), Vec::new());
    for i in 0..lookups {
        let origin = peers[rng.random_range(0..peers.len())];
        let target = KBucketKey::new(app_key(&format!("app-{i}")));
        let (r, t) = rounds(tables, origin, &target);
        reach.push(r as f64);
        total.push(t as f64);
    }
    format!(
        "{:.0} / {:.0} / {:.0} | {:.0} / {:.0}",
        percentile(&mut reach, 0.5),
        percentile(&mut reach, 0.95),
        percentile(&mut reach, 1.0),
        percentile(&mut total, 0.5),
        percentile(&mut total, 0.95),
    )
}

async fn simulate(seed: u64, n: usize) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut swarms = Vec::new();
    let mut addrs: Vec<(PeerId, Multiaddr)> = Vec::new();
    for i in 0..n {
        let key = Keypair::generate_ed25519();
        let mut swarm = build_swarm(&key)?;
        let addr: Multiaddr = format!("/memory/{}", i + 1).parse()?;
        swarm.listen_on(addr.clone())?;
        addrs.push((key.public().to_peer_id(), addr));
        swarms.push((key, swarm));
    }
    let keys: Vec<KBucketKey<PeerId>> = addrs.iter().map(|(p, _)| KBucketKey::from(*p)).collect();
    let mut nodes = Vec::new();
    for (i, (key, mut swarm)) in swarms.into_iter().enumerate() {
        // Only what fits: a peer that waits for room in a full bucket is inserted later and
        // sets off another bootstrap, and a thousand of those cascade for minutes.
        for j in full_table(&keys, i, &mut rng) {
            let (peer, addr) = &addrs[j];
            swarm.behaviour_mut().add_address(peer, addr.clone());
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_node(swarm, rx));
        nodes.push(Node {
            peer: key.public().to_peer_id(),
            key,
            commands: tx,
        });
    }
    // Let the bootstraps (each node's lookups of its own id and of each bucket) run their course.
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut running = 0;
        for node in &nodes {
            running += node.ask(Command::Queries).await?;
        }
        eprintln!(
            "{running} bootstrap queries running after {:.1?}",
            started.elapsed()
        );
        if running == 0 {
            break;
        }
    }
    println!("{n} nodes up and bootstrapped in {:.1?}", started.elapsed());

    let (mut first, mut requests, mut provider_first) = (Vec::new(), Vec::new(), Vec::new());
    let (mut found, mut providers_found, mut forged_stored, mut forged_returned) = (0, 0, 0, 0);
    for i in 0..LOOKUPS {
        let publisher = &nodes[rng.random_range(0..n)];
        let name = format!("app-{i}");
        let key = RecordKey::new(&app_key(&name));
        let value = mycel_protocol::encode(&Signed::sign(&publisher.key, &listing(&name))?)?;
        let record = Record::new(key.clone(), value);
        if !publisher.ask(|r| Command::Put(record, r)).await? {
            bail!("putting {name} reached no node");
        }
        publisher.ask(|r| Command::Provide(key.clone(), r)).await?;
        let searcher = loop {
            let candidate = &nodes[rng.random_range(0..n)];
            if candidate.peer != publisher.peer {
                break candidate;
            }
        };
        let got = searcher.ask(|r| Command::Get(key.clone(), r)).await?;
        if let Some(at) = got.first {
            found += 1;
            first.push(at.as_secs_f64() * 1000.0);
        }
        requests.push(f64::from(got.requests));
        let providers = searcher.ask(|r| Command::Providers(key.clone(), r)).await?;
        if let Some(at) = providers.first {
            providers_found += 1;
            provider_first.push(at.as_secs_f64() * 1000.0);
        }

        if i % 50 == 49 {
            eprintln!("{} lookups done after {:.1?}", i + 1, started.elapsed());
        }
        if i % FORGE_EVERY == 0 {
            // Signed by the publisher in another node's name: refused everywhere.
            let forged_name = format!("forged-{i}");
            let forged_key = RecordKey::new(&app_key(&forged_name));
            let honest = Signed::sign(&publisher.key, &listing(&forged_name))?;
            let (_, payload, signature) = honest.parts();
            let victim = searcher
                .key
                .public()
                .try_into_ed25519()?
                .to_bytes()
                .to_vec();
            let forged =
                Signed::<AppListing>::from_parts(victim, payload.to_vec(), signature.to_vec());
            let record = Record::new(forged_key.clone(), mycel_protocol::encode(&forged)?);
            publisher.ask(|r| Command::Put(record, r)).await?;
            for node in &nodes {
                if node.peer != publisher.peer
                    && node.ask(|r| Command::Stored(forged_key.clone(), r)).await?
                {
                    forged_stored += 1;
                }
            }
            let got = searcher
                .ask(|r| Command::Get(forged_key.clone(), r))
                .await?;
            forged_returned += got.valid;
        }
    }
    println!(
        "| nodes | record found | first valid record p50 / p95 / max | requests per lookup p50 / p95 | providers found | first provider p50 / p95 | forged stored / returned |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {found}/{LOOKUPS} | {:.1} / {:.1} / {:.1} ms | {:.0} / {:.0} | {providers_found}/{LOOKUPS} | {:.1} / {:.1} ms | {forged_stored} / {forged_returned} |",
        percentile(&mut first.clone(), 0.5),
        percentile(&mut first.clone(), 0.95),
        percentile(&mut first, 1.0),
        percentile(&mut requests.clone(), 0.5),
        percentile(&mut requests, 0.95),
        percentile(&mut provider_first.clone(), 0.5),
        percentile(&mut provider_first, 0.95),
    );

    let mut tables = HashMap::new();
    for node in &nodes {
        tables.insert(node.peer, node.ask(Command::Table).await?);
    }
    let sizes: Vec<f64> = tables.values().map(|t| t.len() as f64).collect();
    println!(
        "\nHops (rounds of {ALPHA} requests; reach the closest node p50 / p95 / max | finish p50 / p95), routing tables of {:.0} peers on average:\n",
        sizes.iter().sum::<f64>() / sizes.len() as f64
    );
    println!("| tables | nodes | hops to the closest node | rounds to finish |");
    println!("|---|---|---|---|");
    println!(
        "| built by the swarms above | {n} | {} |",
        hop_figures(&tables, 1000, &mut rng)
    );
    for size in [1_000, 10_000] {
        let synthetic = synthetic_tables(size, &mut rng);
        println!(
            "| synthetic, full | {size} | {} |",
            hop_figures(&synthetic, 1000, &mut rng)
        );
    }
    println!("\nseed {seed}, {:.1?} in all", started.elapsed());
    if forged_stored > 0 || forged_returned > 0 {
        bail!("a forged listing was stored or returned");
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let seed = args.next().map_or(Ok(1), |s| s.parse())?;
    let n = args.next().map_or(Ok(1000), |s| s.parse())?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(simulate(seed, n))
}
