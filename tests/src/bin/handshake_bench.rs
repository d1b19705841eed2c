//! handshake_bench: what a private mesh's handshake costs a connection.
//!
//! ```text
//! cargo build --release -p mycel-tests --bin handshake_bench && target/release/handshake_bench [ITERATIONS]
//! ```
//!
//! In one run, over loopback TCP, dial → `ConnectionEstablished` (on the dialer) for:
//!
//! 1. an open mesh's transport, TCP + Noise + Yamux (the baseline);
//! 2. a private mesh's, mycel's own: TCP + nonces and proofs of the mesh secret + Noise (with a
//!    prologue from the secret) + Yamux;
//! 3. libp2p's stock pnet (XSalsa20 keyed by the secret, under Noise) instead, for reference:
//!    what mycel's first private transport used.
//!
//! The variants take turns, one connection each, so drift on the shared machine hits all alike;
//! each connection is closed before the next is dialled. Prints a markdown table of medians,
//! p10/p90 and the ratios to the baseline. Everything runs in this process, on 127.0.0.1.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, Transport,
    core::{muxing::StreamMuxerBox, upgrade::Version},
    noise,
    pnet::{PnetConfig, PreSharedKey},
    swarm::{SwarmEvent, dummy},
    tcp, yamux,
};
use mycel_mesh::{MeshSecret, transport};
use tokio::time::Instant;

const DEFAULT_ITERATIONS: usize = 1000;
const WARMUP: usize = 50;

#[derive(Clone, Copy, Debug)]
enum Variant {
    Open,
    Private,
    PnetOnly,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Open => "TCP + Noise + Yamux (open mesh, baseline)",
            Variant::Private => "TCP + proof of the secret + Noise + Yamux (private mesh, mycel)",
            Variant::PnetOnly => "TCP + libp2p pnet + Noise + Yamux (stock pnet, reference)",
        }
    }
}

fn tcp_config() -> tcp::Config {
    tcp::Config::default().nodelay(true)
}

fn swarm(variant: Variant, secret: &MeshSecret) -> Result<Swarm<dummy::Behaviour>> {
    let builder = SwarmBuilder::with_new_identity().with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let swarm = match variant {
        Variant::Open => builder
            .with_tcp(tcp_config(), noise::Config::new, yamux::Config::default)?
            .with_behaviour(|_| dummy::Behaviour)?
            .with_swarm_config(idle)
            .build(),
        Variant::Private => builder
            .with_other_transport(|key| {
                transport::private_tcp(key, secret, transport::Refusals::default())
            })?
            .with_behaviour(|_| dummy::Behaviour)?
            .with_swarm_config(idle)
            .build(),
        Variant::PnetOnly => {
            let psk = PreSharedKey::new(*secret.expose());
            builder
                .with_other_transport(|key| {
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                        tcp::tokio::Transport::new(tcp_config())
                            .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                            .upgrade(Version::V1Lazy)
                            .authenticate(noise::Config::new(key)?)
                            .multiplex(yamux::Config::default())
                            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer))),
                    )
                })?
                .with_behaviour(|_| dummy::Behaviour)?
                .with_swarm_config(idle)
                .build()
        }
    };
    Ok(swarm)
}

/// A dialer and a listener of one variant.
struct Pair {
    variant: Variant,
    dialer: Swarm<dummy::Behaviour>,
    listener: Swarm<dummy::Behaviour>,
    addr: Multiaddr,
    listener_id: PeerId,
    samples: Vec<Duration>,
}

impl Pair {
    async fn new(variant: Variant, secret: &MeshSecret) -> Result<Self> {
        let dialer = swarm(variant, secret)?;
        let mut listener = swarm(variant, secret)?;
        listener.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = listener.select_next_some().await {
                break address;
            }
        };
        let listener_id = *listener.local_peer_id();
        Ok(Self {
            variant,
            dialer,
            listener,
            addr,
            listener_id,
            samples: Vec::new(),
        })
    }

    /// Dials once; returns dial → the dialer's `ConnectionEstablished`, then closes the
    /// connection and waits until both sides saw it close.
    async fn connect_once(&mut self) -> Result<Duration> {
        let started = Instant::now();
        self.dialer.dial(self.addr.clone())?;
        let (mut established, mut accepted) = (None, false);
        while established.is_none() || !accepted {
            tokio::select! {
                event = self.dialer.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => established = Some(started.elapsed()),
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        anyhow::bail!("{:?}: dial failed: {error}", self.variant)
                    }
                    _ => {}
                },
                event = self.listener.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => accepted = true,
                    SwarmEvent::IncomingConnectionError { error, .. } => {
                        anyhow::bail!("{:?}: accept failed: {error}", self.variant)
                    }
                    _ => {}
                },
            }
        }
        let took = established.context("established")?;
        let _ = self.dialer.disconnect_peer_id(self.listener_id);
        let (mut dialer_closed, mut listener_closed) = (false, false);
        while !dialer_closed || !listener_closed {
            tokio::select! {
                event = self.dialer.select_next_some() => {
                    if matches!(event, SwarmEvent::ConnectionClosed { .. }) {
                        dialer_closed = true;
                    }
                }
                event = self.listener.select_next_some() => {
                    if matches!(event, SwarmEvent::ConnectionClosed { .. }) {
                        listener_closed = true;
                    }
                }
            }
        }
        Ok(took)
    }
}

/// The `q` quantile (0..=1) of sorted samples, in microseconds.
fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() -> Result<()> {
    let iterations = match std::env::args().nth(1) {
        Some(n) => n.parse().context("ITERATIONS must be a number")?,
        None => DEFAULT_ITERATIONS,
    };
    // One thread: both ends of every connection and all three variants share it alike.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(iterations))
}

async fn run(iterations: usize) -> Result<()> {
    let secret = transport::generate_secret();
    let mut pairs = Vec::new();
    for variant in [Variant::Open, Variant::Private, Variant::PnetOnly] {
        pairs.push(Pair::new(variant, &secret).await?);
    }
    eprintln!(
        "handshake_bench: {iterations} connections per variant (after {WARMUP} warm-up), in turns"
    );
    let started = Instant::now();
    for i in 0..WARMUP + iterations {
        for pair in &mut pairs {
            let took = pair.connect_once().await?;
            if i >= WARMUP {
                pair.samples.push(took);
            }
        }
    }
    eprintln!("handshake_bench: done in {:.1?}", started.elapsed());

    let mut medians = Vec::new();
    println!("| transport | median | p10 / p90 | ratio to the open mesh (median) |");
    println!("|---|---|---|---|");
    for pair in &mut pairs {
        pair.samples.sort();
        let median = quantile_us(&pair.samples, 0.5);
        medians.push(median);
        let ratio = median / medians[0];
        println!(
            "| {} | {median:.0} µs | {:.0} / {:.0} µs | {ratio:.2}x ({:+.0} µs) |",
            pair.variant.label(),
            quantile_us(&pair.samples, 0.1),
            quantile_us(&pair.samples, 0.9),
            median - medians[0],
        );
    }
    Ok(())
}
